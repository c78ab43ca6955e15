"""Quantized network families built from a layer list and a BitPlan.

Every quantizer has a power-of-two scale (Brevitas ``*FixedPoint``), so the exported QONNX
graph, the hls4ml C simulation and the integer emulator can all agree bit for bit.

The architectures themselves are data in ``flipq.quant.archs`` (re-exported here).

>>> arch = ARCHS["digits-cnn"]
>>> plan = default_plan("digits-cnn")
>>> net = QuantNet(arch, (1, 8, 8), plan, num_classes=10)
>>> net.layer_names == plan.names
True
"""

from __future__ import annotations

import brevitas.nn as qnn
import torch
import torch.nn as nn
from brevitas.quant import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

from flipq.host.bitplan import BitPlan, LayerBits
from flipq.quant.archs import ARCHS, DEFAULT_PLANS, Arch, UnknownArchError, default_plan, get_arch, mac_names
from flipq.quant.extrabit import FlipWeightQuant
from flipq.quant.scaling import check_rule, weight_quantizer

__all__ = ["ARCHS", "DEFAULT_PLANS", "Arch", "FloatNet", "QuantNet", "UnknownArchError", "as_tensor", "build_model",
           "copy_mac_weights", "default_plan", "get_arch", "mac_names", "trace_shapes"]


def _weight_quant(lb: LayerBits, weight_scale: str) -> dict:
    """Brevitas weight-quantizer keywords for one layer: its power-of-two scale follows the
    ``weight_scale`` rule (``flipq.quant.scaling``). A layer whose groups are wider than its base
    width (flip allocation) is stored at the widest group width with a frozen power-of-two
    scale, loaded from the state dict (``flipq.quant.extrabit``)."""
    if lb.max_weight_bits > lb.weight_bits:
        return {"weight_quant": FlipWeightQuant, "weight_bit_width": lb.max_weight_bits}
    return {"weight_quant": weight_quantizer(weight_scale), "weight_bit_width": lb.weight_bits}


class QuantNet(nn.Module):
    """A feed-forward Brevitas network: input quantizer, MAC layers with QuantReLU between.

    The quantizer feeding MAC layer L has ``plan[L].act_bits``; its weights ``plan[L].weight_bits``,
    on the power-of-two grid that ``weight_scale`` picks (``"mse"`` or ``"absmax"``,
    ``flipq.quant.scaling``). A network rebuilt to load a state dict needs the same rule.
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
        channels, spatial = input_shape[0], tuple(input_shape[1:])
        flat = None
        names = iter(self.layer_names)
        macs = [t for t in arch if t[0] in ("conv", "fc")]
        mac_index = 0
        for tok in arch:
            if tok[0] == "conv":
                name = next(names)
                _, out_ch, k, pad = tok
                body.append((name, qnn.QuantConv2d(channels, out_ch, k, padding=pad, bias=False,
                                                   **_weight_quant(plan[name], weight_scale))))
                channels = out_ch
                spatial = tuple(s + 2 * pad - k + 1 for s in spatial)
            elif tok[0] == "pool":
                body.append((f"pool{len(body)}", nn.MaxPool2d(tok[1])))
                spatial = tuple(s // tok[1] for s in spatial)
                continue
            elif tok[0] == "fc":
                name = next(names)
                if flat is None:
                    flat = channels * (int(torch.tensor(spatial).prod()) if spatial else 1)
                    body.append(("flatten", nn.Flatten()))
                    channels = flat
                units = tok[1] if tok[1] is not None else num_classes
                body.append((name, qnn.QuantLinear(channels, units, bias=False,
                                                   **_weight_quant(plan[name], weight_scale))))
                channels = units
            else:
                raise ValueError(f"unknown layer token {tok!r}")
            mac_index += 1
            if mac_index < len(macs):
                nxt = self.layer_names[mac_index]
                body.append((f"act{mac_index}", qnn.QuantReLU(
                    act_quant=Uint8ActPerTensorFixedPoint, bit_width=plan[nxt].act_bits,
                    return_quant_tensor=True)))
        self.body = nn.Sequential()
        for name, module in body:
            self.body.add_module(name, module)

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
    """The float twin of a QuantNet: same architecture and layer names (``body.<name>.weight``),
    no quantizers. Its MAC weights load into a QuantNet with :func:`copy_mac_weights`.

    >>> net = FloatNet(ARCHS["mlp"], (1, 8, 8), num_classes=10)
    >>> net.layer_names
    ['fc1', 'fc2', 'fc3']
    """

    def __init__(self, arch: Arch, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.layer_names = mac_names(arch)
        names = iter(self.layer_names)
        macs = sum(t[0] in ("conv", "fc") for t in arch)
        channels, spatial, flat, seen = input_shape[0], tuple(input_shape[1:]), False, 0
        self.body = nn.Sequential()
        for tok in arch:
            if tok[0] == "pool":
                self.body.add_module(f"pool{len(self.body)}", nn.MaxPool2d(tok[1]))
                spatial = tuple(s // tok[1] for s in spatial)
                continue
            name = next(names)
            if tok[0] == "conv":
                _, out_ch, k, pad = tok
                self.body.add_module(name, nn.Conv2d(channels, out_ch, k, padding=pad, bias=False))
                channels, spatial = out_ch, tuple(s + 2 * pad - k + 1 for s in spatial)
            elif tok[0] == "fc":
                if not flat:
                    self.body.add_module("flatten", nn.Flatten())
                    channels = channels * (int(torch.tensor(spatial).prod()) if spatial else 1)
                    flat = True
                units = tok[1] if tok[1] is not None else num_classes
                self.body.add_module(name, nn.Linear(channels, units, bias=False))
                channels = units
            else:
                raise ValueError(f"unknown layer token {tok!r}")
            seen += 1
            if seen < macs:
                self.body.add_module(f"act{seen}", nn.ReLU())

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
    """Copy every MAC layer's weight from ``src`` to ``dst`` (e.g. a trained FloatNet into a
    QuantNet to start quantization-aware retraining); layer names and shapes must match."""
    s, d = src.mac_layers(), dst.mac_layers()
    if list(s) != list(d):
        raise ValueError(f"layer names differ: {list(s)} vs {list(d)}")
    with torch.no_grad():
        for name in s:
            if s[name].weight.shape != d[name].weight.shape:
                raise ValueError(f"layer '{name}': weight shape {tuple(s[name].weight.shape)} vs "
                                 f"{tuple(d[name].weight.shape)}")
            d[name].weight.copy_(s[name].weight)
