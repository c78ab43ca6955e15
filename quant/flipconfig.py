"""The knobs of flip-based allocation (:class:`FlipConfig`) and the ``flipq train --flip ...``
options that fill them. Standard library only: the command line builds its parser from this
module without importing torch.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_flip_arguments(p)
>>> flip_config_from_args(p.parse_args(["--flip", "--flip-group-size", "8"])).group_size
8
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

LR_MODES = ("step", "grad", "off")
PROMOTE_MODES = ("weight", "group")
# flipq.quant.allocators scores them; listed here so the parser needs no torch
ALLOCATORS = ("flip", "random", "error", "sensitivity", "flip+error")


class FlipError(ValueError):
    """A flip configuration or model state that cannot work; the message names layer and value."""


def check_flip_arch(arch, arch_name: str = "this network") -> None:
    """Flip allocation counts level switches on a per-tensor power-of-two weight grid and stores
    the extra bit as half that scale (``flipq.quant.extrabit``); a layer with a float or
    per-channel weight scale has neither, so such an architecture is refused by name.

    >>> from flipq.quant.archs import get_arch
    >>> try:
    ...     check_flip_arch(get_arch("digits-cnn-bn"), "digits-cnn-bn")
    ... except FlipError as e:
    ...     print(e)
    architecture 'digits-cnn-bn': --flip needs power-of-two per-tensor weight scales, but layer 'conv1' has weight_scale 'per_channel'; train it without --flip
    """
    from flipq.quant.archs import pow2_weight_violations

    bad = pow2_weight_violations(arch)
    if bad:
        raise FlipError(f"architecture '{arch_name}': --flip needs power-of-two per-tensor weight scales, but layer "
                        f"'{bad[0][0]}' has weight_scale '{bad[0][1]}'; train it without --flip")


@dataclass(frozen=True)
class FlipConfig:
    """Knobs of flip-based allocation. The paper does not publish them; the defaults were picked
    by experiment on Fashion-MNIST (``docs/mpq.md``): a budget of a quarter of every layer's
    groups, ranked by the sensitivity score, measured best among the allocators at equal bits.

    - ``group_size``: weights per group along the fan-in (the PE's weight group), the unit of
      per-group widths in the BitPlan.
    - ``window``: counting window before each allocation point, in epochs (fractions allowed).
    - ``threshold``: a weight gets the extra bit when it switched between adjacent levels at
      least this often in the window; below 1 it is a fraction of the window's steps.
    - ``allocate_epochs``: allocate at the end of these epochs (0-based); empty means once,
      at the end of the middle epoch. Each later allocation adds weights that are still on the
      coarse grid.
    - ``promote``: ``"weight"`` gives the extra level only to the flagged weights; ``"group"``
      lets every weight of a group that pays for ``b + 1`` bits use it (same storage).
    - ``lr_factor``, ``lr_band``, ``lr_mode``: weights with ``|frac(w/step) - 0.5| < lr_band``
      (near a rounding threshold) learn ``lr_factor`` times slower; ``"step"`` scales the
      optimizer's update (effective under Adam, whose normalisation cancels a constant gradient
      scale), ``"grad"`` scales the gradient, ``"off"`` disables it.
    - ``max_fraction``: optional cap on the fraction of a layer's weights flagged in one
      allocation (the most frequent switchers win); ``None`` for no cap. Threshold mode only.
    - ``budget``: ``None`` allocates by ``threshold`` (flip counts; the bits spent follow the
      data). A fraction in (0, 1] allocates by rank instead: every layer ends with that fraction
      of its groups at ``b + 1`` bits (spread evenly over the allocation points), the groups
      with the best ``allocator`` scores (``flipq.quant.allocators``) first, so the stored
      bits are fixed in advance.
    - ``allocator``: the score a budgeted allocation ranks groups by: ``"flip"``, ``"random"``,
      ``"error"``, ``"sensitivity"`` or ``"flip+error"``; threshold mode needs ``"flip"``.
    - ``seed``: seeds the random scores (the ``"random"`` allocator, flip's tie-break).
    """

    group_size: int = 16
    window: float = 1.0
    threshold: float = 2
    allocate_epochs: tuple[int, ...] = ()
    promote: str = "group"
    lr_factor: float = 0.5
    lr_band: float = 0.1
    lr_mode: str = "grad"
    max_fraction: float | None = None
    # issue 14's ablation (docs/mpq.md): at equal stored bits, ranking groups by gradient x error
    # was the best measured allocator (tied with flip at G=16, ahead at G=1 and G=64)
    budget: float | None = 0.25
    allocator: str = "sensitivity"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise FlipError(f"group_size={self.group_size!r} must be an int >= 1")
        if not self.window > 0:
            raise FlipError(f"window={self.window!r} must be > 0 epochs")
        if not self.threshold > 0:
            raise FlipError(f"threshold={self.threshold!r} must be > 0 (a count, or a fraction < 1)")
        if any(not isinstance(e, int) or e < 0 for e in self.allocate_epochs):
            raise FlipError(f"allocate_epochs={self.allocate_epochs!r} must be epoch numbers >= 0")
        if self.promote not in PROMOTE_MODES:
            raise FlipError(f"promote={self.promote!r} is not one of {PROMOTE_MODES}")
        if self.lr_mode not in LR_MODES:
            raise FlipError(f"lr_mode={self.lr_mode!r} is not one of {LR_MODES}")
        if not 0 < self.lr_factor <= 1:
            raise FlipError(f"lr_factor={self.lr_factor!r} must be in (0, 1]")
        if not 0 <= self.lr_band < 0.5:
            raise FlipError(f"lr_band={self.lr_band!r} must be in [0, 0.5)")
        if self.max_fraction is not None and not 0 < self.max_fraction <= 1:
            raise FlipError(f"max_fraction={self.max_fraction!r} must be in (0, 1]")
        if self.allocator not in ALLOCATORS:
            raise FlipError(f"allocator={self.allocator!r} is not one of {ALLOCATORS}")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise FlipError(f"budget={self.budget!r} must be a fraction of groups in (0, 1], or None for threshold mode")
        if self.budget is None and self.allocator != "flip":
            raise FlipError(f"allocator={self.allocator!r} ranks groups and needs a budget (a fraction in (0, 1]); "
                            "threshold mode counts flips only")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise FlipError(f"seed={self.seed!r} must be an int")

    @property
    def needs_gradients(self) -> bool:
        """Whether allocation reads the mean squared gradient (the sensitivity score)."""
        return self.budget is not None and self.allocator == "sensitivity"

    def allocation_epochs(self, epochs: int) -> tuple[int, ...]:
        chosen = self.allocate_epochs or (max(epochs // 2 - 1, 0),)
        late = [e for e in chosen if e >= epochs]
        if late:
            raise FlipError(f"allocation epoch {late[0]} is not inside the {epochs}-epoch run")
        return tuple(sorted(set(chosen)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["allocate_epochs"] = list(self.allocate_epochs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FlipConfig":
        """Inverse of :meth:`to_dict` (a JSON round trip, e.g. inside the build's config.json).
        A dict without ``budget`` predates budgeted allocation and means the threshold rule."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise FlipError(f"unknown flip option(s) {sorted(unknown)} (known: {sorted(known)})")
        d = dict(d)
        if "budget" not in d:
            # saved before budgets existed: the threshold rule on flip counts, whatever today's default is
            d["budget"] = None
            d.setdefault("allocator", "flip")
        if "allocate_epochs" in d:
            d["allocate_epochs"] = tuple(d["allocate_epochs"])
        return cls(**d)


def add_flip_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for ``flipq train --flip ...``; read them back with :func:`flip_config_from_args`."""
    d = FlipConfig()
    g = parser.add_argument_group("flip-based mixed precision")
    g.add_argument("--flip", action="store_true", help="retrain with flip counting and extra-bit allocation")
    g.add_argument("--flip-group-size", type=int, default=d.group_size, help="weights per group along the fan-in")
    g.add_argument("--flip-window", type=float, default=d.window, help="counting window in epochs")
    g.add_argument("--flip-threshold", type=float, default=d.threshold,
                   help="switches needed for the extra bit: a count, or a fraction of the window's steps if < 1")
    g.add_argument("--flip-allocate-epochs", type=int, nargs="*", default=list(d.allocate_epochs),
                   help="allocate at the end of these epochs (default: the middle one)")
    g.add_argument("--flip-promote", choices=PROMOTE_MODES, default=d.promote,
                   help="extra level for the flagged weights only, or for their whole group")
    g.add_argument("--flip-lr-factor", type=float, default=d.lr_factor, help="learning-rate factor near thresholds")
    g.add_argument("--flip-lr-band", type=float, default=d.lr_band, help="half-width of the band around a threshold")
    g.add_argument("--flip-lr-mode", choices=LR_MODES, default=d.lr_mode)
    g.add_argument("--flip-max-fraction", type=float, default=None,
                   help="cap on the fraction of a layer's weights flagged per allocation (threshold mode)")
    g.add_argument("--flip-budget", type=float, default=d.budget,
                   help="fraction of each layer's groups given b+1 bits, ranked by --flip-allocator "
                        "(0: threshold mode, the bits spent follow the flip counts)")
    g.add_argument("--flip-allocator", choices=ALLOCATORS, default=None,
                   help=f"the score a budgeted allocation ranks groups by (default: {d.allocator}; "
                        "threshold mode counts flips)")
    g.add_argument("--flip-seed", type=int, default=d.seed, help="seed of random scores and tie-breaks")


def flip_config_from_args(args: argparse.Namespace) -> FlipConfig | None:
    """The FlipConfig the options describe, or ``None`` without ``--flip``."""
    if not getattr(args, "flip", False):
        return None
    return FlipConfig(group_size=args.flip_group_size, window=args.flip_window,
                      threshold=args.flip_threshold, allocate_epochs=tuple(args.flip_allocate_epochs),
                      promote=args.flip_promote, lr_factor=args.flip_lr_factor, lr_band=args.flip_lr_band,
                      lr_mode=args.flip_lr_mode, max_fraction=args.flip_max_fraction,
                      budget=args.flip_budget or None, seed=args.flip_seed,
                      allocator=args.flip_allocator or (FlipConfig.allocator if args.flip_budget else "flip"))
