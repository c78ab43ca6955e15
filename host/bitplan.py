"""The BitPlan: per-layer weight/activation bits, the one place precision is decided.

Written by ``flipq.quant``, read by every later stage. On disk it is TOML keyed by layer
name (``plan.toml``); inside ``accel.json`` the same content travels as JSON. This module
needs only the standard library, and reads TOML without ``tomllib`` on Python 3.10 boards
(they read the JSON form).

Example::

    >>> plan = BitPlan.uniform(["conv1", "fc1", "fc2"], weight_bits=4, act_bits=4)
    >>> plan["fc1"].weight_bits
    4

``act_bits`` of a layer is the width of the activations that layer *consumes* (its input),
which is the operand width a bit-serial PE sees; the first layer's ``act_bits`` is the
width of the model's input quantizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

from flipq.host.files import write_atomic
from flipq.host.names import check_layer_name

MIN_BITS = 2
MAX_BITS = 8


class BitPlanError(ValueError):
    """A plan that is malformed or does not match the model; the message names layer and value."""


@dataclass(frozen=True)
class LayerBits:
    """Precision of one MAC layer.

    ``group_size`` groups the weights along the input (fan-in) dimension; 0 means one group
    per output column. ``group_bits`` (optional) gives each group its own weight width, flat in
    row-major order over (output, group); absent means every group has ``weight_bits``.

    What a plan may say, checked here and when it is read: every width is an int (not a bool)
    in 2..8; ``group_bits`` is a list whose widths are ``weight_bits`` or ``weight_bits + 1``
    (the base width and flip allocation's one extra bit; the layer then stores
    ``max_weight_bits`` planes). The count of ``group_bits`` depends on the weights' shape:
    :meth:`BitPlan.check_shapes` checks it against the model.
    """

    name: str
    weight_bits: int
    act_bits: int
    group_size: int = 0
    group_bits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for what in ("weight_bits", "act_bits"):
            v = getattr(self, what)
            if not _is_int(v) or not MIN_BITS <= v <= MAX_BITS:
                raise BitPlanError(
                    f"layer '{self.name}': {what}={v!r} is outside {MIN_BITS}..{MAX_BITS}"
                )
        if not _is_int(self.group_size) or self.group_size < 0:
            raise BitPlanError(f"layer '{self.name}': group_size={self.group_size!r} must be an int >= 0")
        if self.group_bits is not None:
            if not isinstance(self.group_bits, tuple):
                raise BitPlanError(f"layer '{self.name}': group_bits={self.group_bits!r} must be a list of "
                                   f"widths, one per group")
            if not self.group_bits:
                raise BitPlanError(f"layer '{self.name}': group_bits is empty (leave it out for a uniform layer)")
            wide = self.weight_bits + 1
            bad = [b for b in self.group_bits if not _is_int(b) or not MIN_BITS <= b <= MAX_BITS]
            if bad:
                raise BitPlanError(
                    f"layer '{self.name}': group_bits holds {bad[0]!r}, outside {MIN_BITS}..{MAX_BITS}"
                )
            # Training stores a layer with extra bits one bit wider than its base, on half the
            # base scale (flipq.quant.extrabit), so a group is either width; narrower or wider
            # groups have no quantizer behind them.
            odd = [b for b in self.group_bits if b not in (self.weight_bits, wide)]
            if odd:
                raise BitPlanError(
                    f"layer '{self.name}': group_bits holds {odd[0]}, but a group is weight_bits "
                    f"({self.weight_bits}) or one extra bit ({wide}) wide"
                )

    @property
    def max_weight_bits(self) -> int:
        """Widest weight in the layer: the number of bit-planes the hardware stores."""
        return max(self.group_bits) if self.group_bits else self.weight_bits

    def to_dict(self) -> dict:
        d = {"weight_bits": self.weight_bits, "act_bits": self.act_bits}
        if self.group_size:
            d["group_size"] = self.group_size
        if self.group_bits is not None:
            d["group_bits"] = list(self.group_bits)
        return d


def _is_int(v) -> bool:
    """An int that is not a bool: TOML's ``true`` would otherwise read as 1."""
    return isinstance(v, int) and not isinstance(v, bool)


def groups_per_column(fan_in: int, group_size: int) -> int:
    """Weight groups along a fan-in of ``fan_in`` (``flipq.host.groups``): ``group_size`` 0 is
    one group per output column."""
    return 1 if group_size <= 0 else -(-fan_in // group_size)


_KNOWN_KEYS = {"weight_bits", "act_bits", "group_size", "group_bits"}


@dataclass(frozen=True)
class BitPlan:
    """Ordered per-layer precision; layer order is the model's MAC-layer order."""

    layers: tuple[LayerBits, ...]
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen = set()
        for lb in self.layers:
            check_layer_name(lb.name, "plan", "layers")
            if lb.name in seen:
                raise BitPlanError(f"layer '{lb.name}' appears twice in the plan")
            seen.add(lb.name)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def uniform(cls, names: Iterable[str], weight_bits: int, act_bits: int) -> "BitPlan":
        return cls(tuple(LayerBits(n, weight_bits, act_bits) for n in names))

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "plan") -> "BitPlan":
        if not isinstance(d, Mapping) or not isinstance(d.get("layers"), Mapping):
            raise BitPlanError(f"{source}: expected a [layers.<name>] table per layer")
        layers = []
        for name, entry in d["layers"].items():
            check_layer_name(name, source, "layers")
            if not isinstance(entry, Mapping):
                raise BitPlanError(f"{source}: layer '{name}' must be a table, got {entry!r}")
            unknown = set(entry) - _KNOWN_KEYS
            if unknown:
                raise BitPlanError(f"{source}: layer '{name}' has unknown key(s) {sorted(unknown)}")
            for key in ("weight_bits", "act_bits"):
                if key not in entry:
                    raise BitPlanError(f"{source}: layer '{name}' lacks {key}")
            gb = entry.get("group_bits")
            if gb is not None and not isinstance(gb, (list, tuple)):
                raise BitPlanError(f"{source}: layer '{name}': group_bits = {gb!r} must be a list "
                                   f"of widths, one per group")
            layers.append(
                LayerBits(
                    name=str(name),
                    weight_bits=entry["weight_bits"],
                    act_bits=entry["act_bits"],
                    group_size=entry.get("group_size", 0),
                    group_bits=tuple(gb) if gb is not None else None,
                )
            )
        if not layers:
            raise BitPlanError(f"{source}: the plan has no layers")
        meta = d.get("meta", {})
        if not isinstance(meta, Mapping):
            raise BitPlanError(f"{source}: meta = {meta!r} must be a table ([meta])")
        return cls(tuple(layers), dict(meta))

    def to_dict(self) -> dict:
        d: dict = {"layers": {lb.name: lb.to_dict() for lb in self.layers}}
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def load(cls, path: str | Path) -> "BitPlan":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BitPlan file not found: {path}")
        text = path.read_text()
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                data = _loads_toml(text)
        except (ValueError, ImportError) as e:  # tomllib.TOMLDecodeError is a ValueError
            raise BitPlanError(f"{path}: not a readable BitPlan ({e})") from e
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write TOML (or JSON for a ``.json`` path) atomically: a failed write leaves the
        previous file as it was."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1) if path.suffix == ".json" else self.to_toml()
        return write_atomic(path, text)

    def to_toml(self) -> str:
        lines = ["# flipq BitPlan: per-layer weight/activation bits (2..8), keyed by layer name.",
                 "# act_bits = width of the activations the layer consumes."]
        if self.meta:
            lines.append("[meta]")
            for k, v in self.meta.items():
                lines.append(f"{k} = {json.dumps(v)}")
        for lb in self.layers:
            lines.append("")
            lines.append(f"[layers.{_toml_key(lb.name)}]")
            for k, v in lb.to_dict().items():
                lines.append(f"{k} = {json.dumps(v)}")
        return "\n".join(lines) + "\n"

    # -- access -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [lb.name for lb in self.layers]

    def __getitem__(self, name: str) -> LayerBits:
        for lb in self.layers:
            if lb.name == name:
                return lb
        raise BitPlanError(f"layer '{name}' is not in the plan (plan has: {', '.join(self.names)})")

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def with_layer(self, name: str, **changes) -> "BitPlan":
        self[name]  # raises with the known names
        return BitPlan(tuple(replace(lb, **changes) if lb.name == name else lb for lb in self.layers),
                       self.meta)

    def check_names(self, model_layers: Iterable[str]) -> None:
        """Raise unless the plan names exactly ``model_layers``, in that order."""
        model_layers = list(model_layers)
        unknown = [n for n in self.names if n not in model_layers]
        if unknown:
            raise BitPlanError(
                f"plan names layer '{unknown[0]}', which the model does not have "
                f"(model layers: {', '.join(model_layers)})"
            )
        missing = [n for n in model_layers if n not in self.names]
        if missing:
            raise BitPlanError(f"the model's layer '{missing[0]}' has no entry in the plan")
        if self.names != model_layers:
            raise BitPlanError(
                f"plan order {self.names} differs from the model's layer order {model_layers}"
            )

    def check_shapes(self, shapes: Mapping[str, tuple[int, int]]) -> None:
        """Raise unless every layer's ``group_bits`` has one entry per group of its weights.

        ``shapes`` maps each layer to its weights as the ``(K, N)`` matrix of
        ``flipq.host.groups`` (fan-in, outputs); a layer has ``N * ceil(K / group_size)``
        groups (``N`` when ``group_size`` is 0).

        >>> plan = BitPlan((LayerBits("fc1", 2, 4, group_size=8, group_bits=(2, 3)),))
        >>> try:
        ...     plan.check_shapes({"fc1": (16, 2)})
        ... except BitPlanError as e:
        ...     print(e)
        layer 'fc1': group_bits has 2 entries, the layer has 2 outputs x 2 groups of 8 = 4
        """
        for lb in self.layers:
            if lb.name not in shapes:
                raise BitPlanError(f"plan names layer '{lb.name}', which the model does not have "
                                   f"(model layers: {', '.join(shapes)})")
            if lb.group_bits is None:
                continue
            k, n = shapes[lb.name]
            per_column = groups_per_column(k, lb.group_size)
            if len(lb.group_bits) != n * per_column:
                raise BitPlanError(
                    f"layer '{lb.name}': group_bits has {len(lb.group_bits)} entries, the layer has "
                    f"{n} outputs x {per_column} groups of {lb.group_size or k} = {n * per_column}")

    def distinct_bit_widths(self) -> set[int]:
        return {lb.weight_bits for lb in self} | {lb.act_bits for lb in self}


def _toml_key(name: str) -> str:
    if name and all(c.isalnum() or c in "_-" for c in name):
        return name
    return json.dumps(name)


def _loads_toml(text: str) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10 boards read accel.json instead
        import tomli as tomllib  # type: ignore
    return tomllib.loads(text)
