"""Flip-based mixed-precision retraining (Kim et al., IEEE TNNLS 32(7), 2021).

Retraining starts from a uniform low-bit plan (every MAC layer at ``b`` weight bits). While it
runs, :class:`FlipCounter` tracks each weight's quantized level and counts how often it switches
between two *adjacent* levels. At an allocation point, weights that switched at least
``threshold`` times in the counting window get one extra bit: the level half-way between the two
they oscillate over. With a ``budget`` (the default), every layer instead gets that fraction of
its groups at ``b + 1`` bits, the groups ranked by an allocator's score
(``flipq.quant.allocators``: flip counts, random, rounding error, gradient x error); equal bits
whichever score ranks them, which is how ``benchmarks/flip_ablation.py`` compares them. :class:`ThresholdAwareLR` slows weights that sit close to a rounding
threshold, which is where the oscillation comes from.

How the extra bit is represented (what the hardware stores):

- A layer with base width ``b`` that received extra bits is quantized at ``b + 1`` bits with a
  frozen scale ``s / 2``, ``s`` being the ``b``-bit scale Brevitas used at the allocation
  (``flipq.quant.extrabit``: Brevitas' statistics would halve the scale again on a 2-bit layer
  whose weights already sit on the grid).
- Weights without the extra bit are kept on the coarse grid: their latent value lives in the
  counter, and the parameter the network sees is the latent rounded to the ``b``-bit grid (a
  straight-through projection after every optimizer step). At ``b + 1`` bits they are even
  integers, so their LSB plane is zero.
- The BitPlan records it per weight group (``flipq.host.groups`` layout): a group is ``b + 1`` bits
  when one of its weights has the extra bit, else ``b``.

The knobs and their command-line options are in ``flipq.quant.flipconfig`` (no torch), the
``(K, N)`` weight layout in ``flipq.quant.layout``, storage accounting in
``flipq.quant.storage`` and the allocation plot in ``flipq.quant.flipplot``.

Example (a short run on the digits data; see ``docs/mpq.md`` for the defaults' rationale)::

    >>> from flipq.quant.data import load_dataset
    >>> from flipq.quant.models import build_model, default_plan
    >>> from flipq.quant.train import TrainConfig
    >>> ds = load_dataset("digits", limit_train=256)
    >>> model = build_model("mlp", ds.input_shape, default_plan("mlp", 2, 4), ds.num_classes)
    >>> history, plan = train_flip(model, ds, TrainConfig(epochs=2, progress=False),
    ...                            FlipConfig(allocate_epochs=(0,), window=1.0, threshold=2))
    >>> plan["fc1"].weight_bits
    2
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from flipq.host.bitplan import BitPlan, LayerBits
from flipq.quant.allocators import LayerEvidence, group_scores, select_groups, weight_scores
from flipq.quant.extrabit import set_weight_bits
from flipq.quant.flipconfig import LR_MODES, FlipConfig, FlipError, check_flip_arch
from flipq.quant.layout import as_kn, expand_groups, flatten_inputs, group_flags
from flipq.quant.scaling import pow2_weight_scale, quantize
from flipq.quant.train import TrainConfig, load_checkpoint, train

__all__ = ["FlipConfig", "FlipCounter", "FlipError", "ThresholdAwareLR", "train_flip"]


def same_config(saved: dict, cfg: FlipConfig) -> bool:
    """A checkpoint's config equals ``cfg``; fields it predates take their defaults."""
    try:
        return FlipConfig.from_dict(saved) == cfg
    except FlipError:
        return False


def _switches(prev: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return (level - prev).abs() == 1


class FlipCounter:
    """Training hook: counts adjacent-level switches per weight and allocates extra bits.

    Steps are the global optimizer steps ``train()`` reports (``epoch * steps_per_epoch + b``).
    The allocation at the end of epoch ``e`` uses the switches seen in the last
    ``window * steps_per_epoch`` steps before it. ``state_dict()`` holds everything needed to
    resume, and ``load_state_dict()`` puts the model's layers back on ``b + 1`` bits.

    ``allocate_epochs`` overrides the config's (``()``: none during training, the caller calls
    :meth:`allocate`); ``extra_allocations`` counts such calls, made before training, in the
    budget's schedule.
    ``collect_only`` counts in the run's last window and never allocates: the evidence
    (:meth:`evidence`) is then read by the caller, e.g. to try several allocators from one
    retraining. ``gradients`` records the mean squared gradient per weight in the window (the
    sensitivity score; default: when the config's allocator needs it).
    """

    def __init__(self, model: nn.Module, cfg: FlipConfig, steps_per_epoch: int, epochs: int, *,
                 allocate_epochs: tuple[int, ...] | None = None, collect_only: bool = False,
                 extra_allocations: int = 0, gradients: bool | None = None):
        if not hasattr(model, "mac_layers") or not hasattr(model, "plan"):
            raise FlipError("flip training needs a QuantNet (mac_layers() and a plan)")
        check_flip_arch(getattr(model, "arch", ()))
        self.model = model
        self.cfg = cfg
        self.steps_per_epoch = int(steps_per_epoch)
        self.window_steps = max(1, round(cfg.window * steps_per_epoch))
        chosen = cfg.allocation_epochs(epochs) if allocate_epochs is None else tuple(sorted(set(allocate_epochs)))
        self.collect_only = collect_only
        if collect_only:
            chosen = (epochs - 1,)
        self.alloc_steps = [(e + 1) * steps_per_epoch - 1 for e in chosen]
        self.extra_allocations = extra_allocations
        self.planned = len(self.alloc_steps) * (not collect_only) + extra_allocations
        self.layers = model.mac_layers()
        self.chw = flatten_inputs(model)
        self.base_bits = {n: model.plan[n].weight_bits for n in self.layers}
        self.rule = getattr(model, "weight_scale", "absmax")
        for n, b in self.base_bits.items():
            if b + 1 > 8:
                raise FlipError(f"layer '{n}': base weight_bits={b} leaves no room for an extra bit")
        self.counts = {n: torch.zeros(m.weight.shape, dtype=torch.int32) for n, m in self.layers.items()}
        self.flags = {n: torch.zeros(m.weight.shape, dtype=torch.bool) for n, m in self.layers.items()}
        self.latent: dict[str, torch.Tensor] = {}
        self._written: dict[str, torch.Tensor] = {}
        self.prev = {n: self.level(n) for n in self.layers}
        self.prev_scale = {n: self.scale(n) for n in self.layers}
        self.allocations: list[dict] = []
        self.last_step = -1
        self.grad_sq: dict[str, torch.Tensor] = {}
        self.grad_steps = 0
        if cfg.needs_gradients if gradients is None else gradients:
            for name, layer in self.layers.items():
                self.grad_sq[name] = torch.zeros(layer.weight.shape)
                # a tensor hook sees the raw gradient, before ThresholdAwareLR scales it
                layer.weight.register_hook(self._grad_hook(name))

    def _grad_hook(self, name: str):
        def record(grad: torch.Tensor) -> None:
            if self.counting(self.last_step + 1):
                self.grad_sq[name] += grad.detach() ** 2
        return record

    def target_step(self) -> int | None:
        """The step that closes the current counting window, or None after the last one."""
        # allocations made by hand (extra_allocations) come before the scheduled ones
        done = 0 if self.collect_only else max(0, len(self.allocations) - self.extra_allocations)
        pending = self.alloc_steps[done:]
        return pending[0] if pending else None

    def counting(self, step: int) -> bool:
        target = self.target_step()
        return target is not None and target - self.window_steps < step <= target

    # weights as the counter sees them
    def latent_weight(self, name: str) -> torch.Tensor:
        return self.latent[name] if name in self.latent else self.layers[name].weight.detach()

    def scale(self, name: str) -> torch.Tensor:
        """The coarse (base-width) scale ``s``: the model's weight-scale rule on the ``b``-bit
        layer, twice the frozen scale once the layer is at ``b + 1`` bits."""
        if name in self.latent:
            return 2 * self.layers[name].weight_quant.tensor_quant.scaling_impl.scale.detach()
        return pow2_weight_scale(self.layers[name].weight, self.base_bits[name], self.rule)

    def level(self, name: str) -> torch.Tensor:
        """Each weight's level on the coarse ``b``-bit grid (the quantizer's integer)."""
        top = 2 ** (self.base_bits[name] - 1) - 1
        w = self.latent_weight(name)
        return torch.clamp(torch.round(w / self.scale(name)), -top, top).to(torch.int8)

    # hook entry points
    def after_step(self, model: nn.Module, step: int) -> None:
        self._project()
        target = self.target_step()
        self.last_step = step
        if target is None:
            return  # no window ahead: reading every layer's levels would be wasted time
        counting = self.counting(step)
        for name in self.layers:
            lvl, scale = self.level(name), self.scale(name)
            # When the layer's scale moves (its statistic crossing a power of two), every level moves with
            # it: that is not a weight oscillating between two levels, so the step is not counted.
            same_grid = name not in self.prev_scale or torch.equal(scale, self.prev_scale[name])
            if counting and same_grid:
                self.counts[name] += _switches(self.prev[name], lvl).to(torch.int32)
            self.prev[name], self.prev_scale[name] = lvl, scale
        self.grad_steps += bool(counting and self.grad_sq)
        if target is not None and step >= target and not self.collect_only:
            self.allocate()

    def threshold_count(self) -> float:
        t = self.cfg.threshold
        return t * self.window_steps if t < 1 else t

    def evidence(self, name: str, generator: torch.Generator | None = None) -> LayerEvidence:
        """What the window recorded for one layer, as an allocator reads it."""
        grad = self.grad_sq.get(name)
        return LayerEvidence(latent=self.latent_weight(name), scale=self.scale(name), bits=self.base_bits[name],
                             counts=self.counts[name], generator=generator,
                             grad_sq=None if grad is None else grad / max(self.grad_steps, 1))

    def allocate(self, fraction: float | None = None) -> dict:
        """Give the extra bit: by rank when the config has a budget (or ``fraction`` is given:
        every layer then has that fraction of its groups at ``b + 1`` bits), else to the weights
        whose switch count reached the threshold. Starts the next counting window afresh."""
        if fraction is None and self.cfg.budget is not None:
            fraction = self.cfg.budget * (len(self.allocations) + 1) / max(self.planned, len(self.allocations) + 1)
        if fraction is not None:
            return self._allocate_budget(fraction)
        thr = self.threshold_count()
        record = {"step": self.last_step, "threshold_count": thr, "layers": {}}
        for name, layer in self.layers.items():
            new = (self.counts[name] >= thr) & ~self.flags[name]
            cap = self.cfg.max_fraction
            if cap is not None and int(new.sum()) > cap * new.numel():
                keep = int(cap * new.numel())
                score = torch.where(new, self.counts[name].float(), torch.full_like(new, -1, dtype=torch.float))
                idx = torch.argsort(score.flatten(), descending=True)[:keep]
                new = torch.zeros(new.numel(), dtype=torch.bool)
                new[idx] = True
                new = new.reshape(self.flags[name].shape)
            flagged_weights = int(new.sum())
            if self.cfg.promote == "group":
                chw = self.chw[name]
                new = expand_groups(group_flags(new | self.flags[name], self.cfg.group_size, chw),
                                    self.cfg.group_size, new.shape, chw) & ~self.flags[name]
            self.assign(name, new)
            record["layers"][name] = {"switching": flagged_weights, "weights": new.numel()}
        return self._close_window(record)

    def _allocate_budget(self, fraction: float) -> dict:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1009 + len(self.allocations))
        g = self.cfg.group_size
        record = {"step": self.last_step, "allocator": self.cfg.allocator, "fraction": fraction, "layers": {}}
        for name in self.layers:
            chw = self.chw[name]
            scores = group_scores(weight_scores(self.cfg.allocator, self.evidence(name, gen)), g, chw)
            k = as_kn(self.flags[name], chw).shape[0]
            chosen = select_groups(scores, fraction, group_flags(self.flags[name], g, chw), partial_last=k % g != 0)
            new = expand_groups(chosen, g, self.flags[name].shape, chw) & ~self.flags[name]
            self.assign(name, new)
            record["layers"][name] = {"flagged": int(new.sum()), "weights": new.numel()}
        return self._close_window(record)

    def _close_window(self, record: dict) -> dict:
        for name in self.layers:
            self.counts[name].zero_()
            if name in self.grad_sq:
                self.grad_sq[name].zero_()
        self.grad_steps = 0
        self._project()
        self.allocations.append(record)
        return record

    def assign(self, name: str, new: torch.Tensor) -> None:
        """Give weight-shaped ``new`` flags of layer ``name`` the extra level (switching the
        layer to ``b + 1`` bits on its first flags)."""
        if new.any() and name not in self.latent:
            self._switch(name)
        self.flags[name] |= new

    def _switch(self, name: str) -> None:
        layer = self.layers[name]
        s = self.scale(name)  # what the b-bit quantizer uses now
        set_weight_bits(layer, self.base_bits[name] + 1, float(s) / 2)
        self.latent[name] = layer.weight.detach().clone()
        self._written[name] = layer.weight.detach().clone()

    def _project(self) -> None:
        """Carry the optimizer's update into the latent weights, then write the coarse-grid
        projection of the unflagged ones into the Parameter (straight-through)."""
        for name, latent in self.latent.items():
            w = self.layers[name].weight
            latent += w.detach() - self._written[name]
            projected = self.project(name)
            with torch.no_grad():
                w.copy_(projected)
            self._written[name] = projected

    def project(self, name: str) -> torch.Tensor:
        """Latent weights with the un-flagged ones rounded (and clipped) to the coarse grid."""
        latent = self.latent_weight(name)
        return torch.where(self.flags[name], latent, quantize(latent, self.base_bits[name], self.scale(name)))

    # results
    def fractions(self) -> dict[str, dict[str, float]]:
        """Per layer: fraction of weights with the extra level, and of groups at ``b + 1`` bits."""
        out = {}
        for name, f in self.flags.items():
            g = group_flags(f, self.cfg.group_size, self.chw[name])
            out[name] = {"weights": float(f.float().mean()), "groups": float(g.float().mean())}
        return out

    def plan(self) -> BitPlan:
        """The BitPlan after allocation: per-group widths for layers that received extra bits."""
        layers = []
        for lb in self.model.plan:
            f = self.flags[lb.name]
            if not f.any():
                layers.append(LayerBits(lb.name, lb.weight_bits, lb.act_bits))
                continue
            g = group_flags(f, self.cfg.group_size, self.chw[lb.name])
            b = self.base_bits[lb.name]
            bits = torch.where(g, b + 1, b).flatten().tolist()
            layers.append(LayerBits(lb.name, b, lb.act_bits, self.cfg.group_size, tuple(int(x) for x in bits)))
        meta = dict(self.model.plan.meta)
        meta.update({"flip_group_size": self.cfg.group_size, "flip_allocations": len(self.allocations)})
        return BitPlan(tuple(layers), meta)

    # resume
    def state_dict(self) -> dict:
        return {"config": self.cfg.to_dict(), "counts": self.counts, "prev": self.prev, "prev_scale": self.prev_scale,
                "flags": self.flags, "latent": self.latent, "allocations": self.allocations,
                "last_step": self.last_step, "grad_sq": self.grad_sq, "grad_steps": self.grad_steps}

    def restore_layers(self, d: dict) -> None:
        """Put the layers that had extra bits back at ``b + 1`` bits, before the model's state
        dict (which holds their frozen scales) is loaded."""
        for name in d["latent"]:
            if name not in self.latent:
                set_weight_bits(self.layers[name], self.base_bits[name] + 1, 1.0)
                self.latent[name] = d["latent"][name].clone()

    def load_state_dict(self, d: dict) -> None:
        if not same_config(d["config"], self.cfg):
            raise FlipError(f"the checkpoint's flip config {d['config']} differs from {self.cfg.to_dict()}")
        self.restore_layers(d)
        self.counts, self.prev, self.flags = d["counts"], d["prev"], d["flags"]
        self.prev_scale = d.get("prev_scale", self.prev_scale)
        self.allocations, self.last_step = d["allocations"], d["last_step"]
        self.grad_sq, self.grad_steps = d.get("grad_sq", self.grad_sq), d.get("grad_steps", 0)
        self.latent = {name: t.clone() for name, t in d["latent"].items()}
        # train() loads the model before its hooks: the Parameter holds the last projection
        self._written = {name: self.layers[name].weight.detach().clone() for name in self.latent}


class ThresholdAwareLR:
    """Training hook: weights near a rounding threshold learn ``factor`` times slower.

    A weight is in the band when ``|frac(w / step) - 0.5| < band`` and the threshold lies between
    two representable levels; ``step`` is ``s`` on the coarse grid and ``s / 2`` for weights with
    the extra bit. Register it *before* the :class:`FlipCounter` so its ``after_step`` sees the
    optimizer's raw update.
    """

    def __init__(self, counter: FlipCounter, factor: float = 0.3, band: float = 0.1,
                 mode: str = "step"):
        if mode not in LR_MODES:
            raise FlipError(f"mode={mode!r} is not one of {LR_MODES}")
        self.counter, self.factor, self.band, self.mode = counter, factor, band, mode
        self._before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def in_band(self, name: str) -> torch.Tensor:
        c = self.counter
        b = c.base_bits[name]
        fine = c.flags[name]
        step = torch.where(fine, c.scale(name) / 2, c.scale(name))
        top = torch.where(fine, torch.tensor(2.0 ** b - 1), torch.tensor(2.0 ** (b - 1) - 1))
        u = c.latent_weight(name) / step
        frac = u - torch.floor(u)
        return ((frac - 0.5).abs() < self.band) & (u.abs() < top)

    def after_backward(self, model: nn.Module) -> None:
        if self.mode == "off":
            return
        for name, layer in self.counter.layers.items():
            mask = self.in_band(name)
            if self.mode == "grad":
                if layer.weight.grad is not None:
                    layer.weight.grad.mul_(torch.where(mask, self.factor, 1.0))
            else:
                self._before[name] = (mask, layer.weight.detach().clone())

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.mode != "step":
            return
        for name, (mask, before) in self._before.items():
            w = self.counter.layers[name].weight
            with torch.no_grad():
                w.copy_(torch.where(mask, before + self.factor * (w - before), w))
        self._before = {}


# -- the run ------------------------------------------------------------------------------------
def train_flip(model: nn.Module, ds, train_cfg: TrainConfig, flip_cfg: FlipConfig,
               checkpoint: str | Path | None = None) -> tuple[dict, BitPlan]:
    """Retrain ``model`` (a QuantNet on its uniform base plan) with flip counting, threshold-aware
    learning rate and extra-bit allocation. Checkpoints every epoch and resumes (hooks included).

    Returns the training history (with a ``"flip"`` entry: allocations and per-layer fractions)
    and the BitPlan with per-group widths; ``model.plan`` is set to it.
    """
    steps_per_epoch = math.ceil(len(ds.x_train) / train_cfg.batch_size)
    counter = FlipCounter(model, flip_cfg, steps_per_epoch, train_cfg.epochs)
    lr = ThresholdAwareLR(counter, flip_cfg.lr_factor, flip_cfg.lr_band, flip_cfg.lr_mode)
    if checkpoint is not None and Path(checkpoint).is_file():
        # Layers that got extra bits carry a frozen scale in the state dict: rebuild them first.
        hooks_state = load_checkpoint(Path(checkpoint)).get("hooks") or [None, None]
        if hooks_state[1] is not None:
            if not same_config(hooks_state[1]["config"], flip_cfg):
                raise FlipError(f"{checkpoint}: the checkpoint's flip config {hooks_state[1]['config']} "
                                f"differs from {flip_cfg.to_dict()}")
            counter.restore_layers(hooks_state[1])
    history = train(model, ds, train_cfg, checkpoint, hooks=(lr, counter))
    plan = counter.plan()
    model.plan = plan
    history["flip"] = {"config": flip_cfg.to_dict(), "allocations": counter.allocations,
                       "fractions": counter.fractions()}
    return history, plan
