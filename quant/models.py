"""Quantized network families built from a layer list and a BitPlan.

flipq's own networks quantize with power-of-two scales (Brevitas ``*FixedPoint``), no bias and
QuantReLU between layers. A layer token's options (``flipq.quant.archs``) add what users'
models have: biases (float or ``Int32Bias``), BatchNorm, float and per-channel scales, signed
activations; the integer lowering computes those exactly through per-channel thresholds.

The architectures themselves are data in ``flipq.quant.archs`` (re-exported here).

>>> arch = ARCHS["digits-cnn"]
>>> plan = default_plan("digits-cnn")
>>> net = QuantNet(arch, (1, 8, 8), plan, num_classes=10)
>>> net.layer_names == plan.names
True
"""

from __future__ import annotations

from dataclasses import dataclass

import brevitas.nn as qnn
import torch
import torch.nn as nn
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerChannelFloat,
                            Int8WeightPerTensorFloat, Int32Bias, Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)

from flipq.host.bitplan import BitPlan, LayerBits
from flipq.quant.archs import (ARCHS, DEFAULT_PLANS, OUTPUT_BITS, Arch, ArchTokenError, UnknownArchError, default_plan,
                               get_arch, mac_names, mac_options, token_fields)
from flipq.quant.extrabit import FlipWeightQuant
from flipq.quant.scaling import check_rule, weight_quantizer

__all__ = ["ARCHS", "DEFAULT_PLANS", "Arch", "FloatNet", "QuantNet", "UnknownArchError", "as_tensor", "build_model",
           "copy_mac_weights", "default_plan", "get_arch", "mac_names", "trace_shapes"]

FLOAT_WEIGHT_QUANTS = {"float": Int8WeightPerTensorFloat, "per_channel": Int8WeightPerChannelFloat}
# (act option, act_scale option) -> (Brevitas layer, its quantizer)
ACT_QUANTS = {("relu", "pow2"): (qnn.QuantReLU, Uint8ActPerTensorFixedPoint),
              ("relu", "float"): (qnn.QuantReLU, Uint8ActPerTensorFloat),
              ("signed", "pow2"): (qnn.QuantIdentity, Int8ActPerTensorFixedPoint),
              ("signed", "float"): (qnn.QuantIdentity, Int8ActPerTensorFloat)}


def _weight_quant(lb: LayerBits, weight_scale: str, kind: str = "pow2") -> dict:
    """Brevitas weight-quantizer keywords for one layer. A power-of-two layer's scale follows the
    ``weight_scale`` rule (``flipq.quant.scaling``); a layer whose groups are wider than its base
    width (flip allocation) is stored at the widest group width with a frozen power-of-two
    scale, loaded from the state dict (``flipq.quant.extrabit``). ``kind`` ``"float"`` and
    ``"per_channel"`` are Brevitas' float-scale quantizers, which flip allocation cannot use."""
    if kind != "pow2":
        if lb.max_weight_bits > lb.weight_bits:
            raise ArchTokenError(f"layer '{lb.name}': per-group widths (group_bits) need a power-of-two weight "
                                 f"scale, but the architecture gives it weight_scale '{kind}'")
        return {"weight_quant": FLOAT_WEIGHT_QUANTS[kind], "weight_bit_width": lb.weight_bits}
    if lb.max_weight_bits > lb.weight_bits:
        return {"weight_quant": FlipWeightQuant, "weight_bit_width": lb.max_weight_bits}
    return {"weight_quant": weight_quantizer(weight_scale), "weight_bit_width": lb.weight_bits}


@dataclass(frozen=True)
class Step:
    """One module of a network walked from its architecture: ``kind`` is ``conv``, ``fc``,
    ``pool`` or ``flatten``; ``shape`` the module's arguments (conv: in, out, kernel, pad; fc:
    in, out; pool: k); MAC steps carry their ``name``, options and whether an activation follows."""

    kind: str
    shape: tuple
    name: str = ""
    options: dict | None = None
    act_after: bool = False


def walk(arch: Arch, input_shape: tuple[int, ...], num_classes: int) -> list[Step]:
    """The modules of ``arch`` on ``input_shape`` in order, with their sizes.

    >>> [s.kind for s in walk(ARCHS["digits-cnn"], (1, 8, 8), 10)]
    ['conv', 'pool', 'flatten', 'fc', 'fc']
    """
    options = mac_options(arch)
    names = iter(options)
    steps: list[Step] = []
    channels, spatial, flat = input_shape[0], tuple(input_shape[1:]), False
    for tok in arch:
        fields = token_fields(tok)
        if fields[0] == "pool":
            steps.append(Step("pool", (fields[1],)))
            spatial = tuple(s // fields[1] for s in spatial)
            continue
        name = next(names)
        if fields[0] == "conv":
            _, out_ch, k, pad = fields
            shape = (channels, out_ch, k, pad)
            spatial = tuple(s + 2 * pad - k + 1 for s in spatial)
        else:
            if not flat:
                steps.append(Step("flatten", ()))
                channels = channels * (int(torch.tensor(spatial).prod()) if spatial else 1)
                flat = True
            out_ch = fields[1] if fields[1] is not None else num_classes
            shape = (channels, out_ch)
        channels = out_ch
        steps.append(Step(fields[0], shape, name, options[name]))
    return [Step(st.kind, st.shape, st.name, st.options, bool(st.name) and st.options["act"] != "none")
            for st in steps]


def _batchnorm(step: Step) -> nn.Module:
    return (nn.BatchNorm2d if step.kind == "conv" else nn.BatchNorm1d)(step.shape[1])


def _body(modules: list[tuple[str, nn.Module]]) -> nn.Sequential:
    body = nn.Sequential()
    for name, module in modules:
        body.add_module(name, module)
    return body


def _pool_or_flatten(step: Step, index: int) -> tuple[str, nn.Module]:
    if step.kind == "pool":
        return f"pool{index}", nn.MaxPool2d(step.shape[0])
    return "flatten", nn.Flatten()


class QuantNet(nn.Module):
    """A feed-forward Brevitas network: input quantizer, MAC layers (with their optional bias and
    BatchNorm) with an activation quantizer between.

    The quantizer feeding MAC layer L has ``plan[L].act_bits``; its weights ``plan[L].weight_bits``,
    on the power-of-two grid that ``weight_scale`` picks (``"mse"`` or ``"absmax"``,
    ``flipq.quant.scaling``) unless its token asks for a float scale. A network rebuilt to load a
    state dict needs the same rule. The input quantizer always has a power-of-two scale.
    """

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], plan: BitPlan, num_classes: int,
                 signed_input: bool = False, weight_scale: str = "mse"):
        super().__init__()
        self.arch = arch
        self.weight_scale = check_rule(weight_scale)
        self.input_shape = tuple(input_shape)
        self.layer_names = mac_names(arch)
        plan.check_names(self.layer_names)
        self.plan = plan
        first = plan[self.layer_names[0]]
        in_quant = Int8ActPerTensorFixedPoint if signed_input else Uint8ActPerTensorFixedPoint
        self.input_quant = qnn.QuantIdentity(act_quant=in_quant, bit_width=first.act_bits,
                                             return_quant_tensor=True)
        body: list[tuple[str, nn.Module]] = []
        mac_index = 0
        for step in walk(arch, self.input_shape, num_classes):
            if not step.name:
                body.append(_pool_or_flatten(step, len(body)))
                continue
            opts = step.options
            common = {"bias": opts["bias"] != "none", "bias_quant": Int32Bias if opts["bias"] == "int32" else None,
                      **_weight_quant(plan[step.name], weight_scale, opts["weight_scale"])}
            if step.kind == "conv":
                cin, cout, k, pad = step.shape
                body.append((step.name, qnn.QuantConv2d(cin, cout, k, padding=pad, **common)))
            else:
                body.append((step.name, qnn.QuantLinear(*step.shape, **common)))
            if opts["bn"]:
                body.append((f"{step.name}_bn", _batchnorm(step)))
            mac_index += 1
            if step.act_after:
                layer, quant = ACT_QUANTS[(opts["act"], opts["act_scale"])]
                bits = plan[self.layer_names[mac_index]].act_bits if mac_index < len(self.layer_names) else OUTPUT_BITS
                body.append((f"act{mac_index}", layer(act_quant=quant, bit_width=bits, return_quant_tensor=True)))
        self.body = _body(body)

    def mac_layers(self) -> dict[str, nn.Module]:
        return {n: getattr(self.body, n) for n in self.layer_names}

    def forward(self, x):
        return self.body(self.input_quant(x))


def build_model(arch_name: str, input_shape, plan: BitPlan, num_classes: int,
                signed_input: bool = False, weight_scale: str = "mse") -> QuantNet:
    return QuantNet(get_arch(arch_name), input_shape, plan, num_classes, signed_input, weight_scale)


def as_tensor(y) -> torch.Tensor:
    """A Brevitas output (QuantTensor or Tensor) as a plain tensor."""
    return y.value if hasattr(y, "value") else y


class FloatNet(nn.Module):
    """The float twin of a QuantNet: same architecture, layer names (``body.<name>.weight``),
    biases and BatchNorms, no quantizers (a signed activation is the identity). Its MAC layers load
    into a QuantNet with :func:`copy_mac_weights`.

    >>> net = FloatNet(ARCHS["mlp"], (1, 8, 8), num_classes=10)
    >>> net.layer_names
    ['fc1', 'fc2', 'fc3']
    """

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.layer_names = mac_names(arch)
        body: list[tuple[str, nn.Module]] = []
        mac_index = 0
        for step in walk(arch, self.input_shape, num_classes):
            if not step.name:
                body.append(_pool_or_flatten(step, len(body)))
                continue
            bias = step.options["bias"] != "none"
            if step.kind == "conv":
                cin, cout, k, pad = step.shape
                body.append((step.name, nn.Conv2d(cin, cout, k, padding=pad, bias=bias)))
            else:
                body.append((step.name, nn.Linear(*step.shape, bias=bias)))
            if step.options["bn"]:
                body.append((f"{step.name}_bn", _batchnorm(step)))
            mac_index += 1
            if step.act_after:
                body.append((f"act{mac_index}", nn.ReLU() if step.options["act"] == "relu" else nn.Identity()))
        self.body = _body(body)

    def mac_layers(self) -> dict[str, nn.Module]:
        return {n: getattr(self.body, n) for n in self.layer_names}

    def forward(self, x):
        return self.body(x)


def trace_shapes(model: nn.Module) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per child of ``model.body``: (input shape, output shape) without the batch dimension,
    from one forward pass on zeros; the model's training mode is left as it was."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(name):
        def hook(mod, inp, out):
            out = as_tensor(out)
            shapes[name] = (tuple(as_tensor(inp[0]).shape[1:]), tuple(out.shape[1:]))
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.body.named_children()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *model.input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def copy_mac_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy every MAC layer's weight and bias, and the BatchNorm after it, from ``src`` to ``dst``
    (e.g. a trained FloatNet into a QuantNet to start quantization-aware retraining); layer names
    and shapes must match."""
    s, d = src.mac_layers(), dst.mac_layers()
    if list(s) != list(d):
        raise ValueError(f"layer names differ: {list(s)} vs {list(d)}")
    with torch.no_grad():
        for name in s:
            if s[name].weight.shape != d[name].weight.shape:
                raise ValueError(f"layer '{name}': weight shape {tuple(s[name].weight.shape)} vs "
                                 f"{tuple(d[name].weight.shape)}")
            d[name].weight.copy_(s[name].weight)
            if s[name].bias is not None and d[name].bias is not None:
                d[name].bias.copy_(s[name].bias)
            bn_src, bn_dst = (getattr(m.body, f"{name}_bn", None) for m in (src, dst))
            if bn_src is not None and bn_dst is not None:
                bn_dst.load_state_dict(bn_src.state_dict())
