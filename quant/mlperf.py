"""The MLPerf Tiny reference networks in Brevitas, quantized the way flipq maps them exactly.

Each builder returns a network in eval mode, quantized with power-of-two scales (Brevitas
``*FixedPoint``): weights ``weight_bits`` wide, activations ``act_bits`` wide, an 8-bit signed input
quantizer. BatchNorm stays as the user's model has it (lowering folds it into thresholds); the
operands of every residual add are quantized on power-of-two grids, as flipq needs for an exact sum
(docs/datapath.md). Shapes follow the MLPerf Tiny reference models (v0.7/v1.0):

- ``resnet8`` (image classification, CIFAR-10 shape 3x32x32): a 16-channel stem, three stacks of
  one basic block (16, 32 stride 2, 64 stride 2; a 1x1 projection where the shape changes), a
  global average pool and a dense layer;
- ``mobilenet_v1`` (visual wake words, 3x96x96, width 0.25): a stride-2 stem and thirteen
  depthwise-separable blocks (depthwise 3x3 + BatchNorm + ReLU, pointwise 1x1 + BatchNorm + ReLU),
  a global average pool, a dense layer of two classes;
- ``ds_cnn`` (keyword spotting, 1x49x10 MFCC): a 10x4 stride-2 stem of 64 channels, four
  depthwise-separable blocks, a global average pool, twelve classes;
- ``ad_autoencoder`` (anomaly detection, 640 features): dense 128-128-128-128-8-128-128-128-128-640,
  BatchNorm and ReLU between.

No data set of theirs is on this machine and nothing may be downloaded: :func:`randomize` gives
the weights and BatchNorm statistics seeded random values and calibrates the activation scales on
random inputs, so exactness and hardware cost can be measured, accuracy cannot.

    >>> net = build("resnet8", weight_bits=4, act_bits=4)      # doctest: +SKIP
"""

from __future__ import annotations

import brevitas.nn as qnn
import torch
import torch.nn as nn
from brevitas.quant import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

from flipq.host.bitplan import BitPlan, BitPlanError
from flipq.quant.archs import GRAPH_ARCHS

# name -> (input shape without batch, classes / outputs, the task MLPerf Tiny runs it on)
MODELS = {
    "resnet8": ((3, 32, 32), 10, "image classification (CIFAR-10)"),
    "mobilenet_v1": ((3, 96, 96), 2, "visual wake words, width 0.25"),
    "ds_cnn": ((1, 49, 10), 12, "keyword spotting"),
    "ad_autoencoder": ((640,), 640, "anomaly detection"),
}


class _Widths:
    """Widths from a BitPlan keyed by module path: a layer's weights, and the activations it
    reads (``act_bits`` of its plan entry) for the quantizer that feeds it; the power-of-two weight
    scale follows the ``weight_scale`` rule (``flipq.quant.scaling``)."""

    def __init__(self, plan: BitPlan, weight_scale: str):
        self.plan, self.weight_scale = plan, weight_scale

    def weights(self, name: str) -> dict:
        from flipq.quant.models import _weight_quant

        return _weight_quant(self.plan[name], self.weight_scale)

    def reads(self, *names: str) -> int:
        """The width of activations read by every layer in ``names`` (one quantizer feeds them)."""
        widths = {n: self.plan[n].act_bits for n in names}
        if len(set(widths.values())) != 1:
            raise BitPlanError("layers " + ", ".join(f"'{n}'" for n in names) + " read one activation quantizer "
                               "but the plan gives them act_bits " + ", ".join(map(str, widths.values()))
                               + "; give them one width")
        return widths[names[0]]


def _conv(ci, co, k, widths: _Widths, name: str, *, stride=1, padding=0, groups=1):
    return qnn.QuantConv2d(ci, co, k, stride=stride, padding=padding, groups=groups, bias=False,
                           **widths.weights(name))


def _linear(ci, co, widths: _Widths, name: str):
    return qnn.QuantLinear(ci, co, bias=False, **widths.weights(name))


def _relu(bits, quant_tensor=False):
    return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=quant_tensor)


def _signed(bits, quant_tensor=False):
    return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=quant_tensor)


def _input(bits=8, signed=True):
    quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    return qnn.QuantIdentity(act_quant=quant, bit_width=bits, return_quant_tensor=True)


class GraphNet(nn.Module):
    """What the training stage needs of a network: its MAC layers by plan name and its plan
    (flip allocation replaces it with the per-group widths it allocates)."""

    layer_names: tuple[str, ...] = ()

    def mac_layers(self) -> dict[str, nn.Module]:
        return {n: self.get_submodule(n) for n in self.layer_names}

    def flatten_inputs(self) -> dict[str, None]:
        """(C, H, W) a dense layer reads through a flatten: none here, every dense layer reads a
        global pool's 1x1 map (channels-first and channels-last rows agree)."""
        return {n: None for n in self.layer_names}


class _Basic(nn.Module):
    """ResNet's basic block ``s``: conv-BN-ReLU-conv-BN, the shortcut (the input, or a 1x1
    projection), their sum, ReLU. The branch's end and the projection are quantized (signed, power
    of two, one bit wider than the block's output) so the sum is exact; plain tensors are added
    (Brevitas adds quant tensors of one scale only). ``out_bits``: what the next layer reads."""

    def __init__(self, ci, co, stride, widths: _Widths, s: str, out_bits: int):
        super().__init__()
        self.proj = None
        shape_changes = stride != 1 or ci != co
        widths.reads(*((f"{s}.c1", f"{s}.proj") if shape_changes else (f"{s}.c1",)))
        self.c1 = _conv(ci, co, 3, widths, f"{s}.c1", stride=stride, padding=1)
        self.b1, self.r1 = nn.BatchNorm2d(co), _relu(widths.reads(f"{s}.c2"))
        self.c2, self.b2, self.q2 = _conv(co, co, 3, widths, f"{s}.c2", padding=1), nn.BatchNorm2d(co), _signed(out_bits + 1)
        if shape_changes:
            self.proj, self.qp = _conv(ci, co, 1, widths, f"{s}.proj", stride=stride), _signed(out_bits + 1)
        self.out = _relu(out_bits)

    def forward(self, x):
        y = self.q2(self.b2(self.c2(self.r1(self.b1(self.c1(x))))))
        s = self.qp(self.proj(x)) if self.proj is not None else getattr(x, "value", x)
        return self.out(y + s)


class ResNet8(GraphNet):
    layer_names = GRAPH_ARCHS["resnet8"]

    def __init__(self, plan: BitPlan, classes=10, in_channels=3, input_bits=None, signed_input=True,
                 weight_scale="mse"):
        super().__init__()
        self.plan, w = plan, _Widths(plan, weight_scale)
        self.inq = _input(input_bits or w.reads("stem"), signed_input)
        self.stem, self.bn, self.r = _conv(in_channels, 16, 3, w, "stem", padding=1), nn.BatchNorm2d(16), \
            _relu(w.reads("s1.c1"))
        self.s1 = _Basic(16, 16, 1, w, "s1", w.reads("s2.c1", "s2.proj"))
        self.s2 = _Basic(16, 32, 2, w, "s2", w.reads("s3.c1", "s3.proj"))
        self.s3 = _Basic(32, 64, 2, w, "s3", w.reads("fc"))
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), _linear(64, classes, w, "fc")

    def forward(self, x):
        x = self.r(self.bn(self.stem(self.inq(x))))
        return self.fc(torch.flatten(self.pool(self.s3(self.s2(self.s1(x)))), 1))


class _Separable(nn.Module):
    """Depthwise 3x3 (BatchNorm, ReLU quantizer), pointwise 1x1 (BatchNorm, ReLU quantizer)."""

    def __init__(self, ci, co, stride, w: _Widths, b: str, out_bits: int):
        super().__init__()
        self.dw = _conv(ci, ci, 3, w, f"{b}.dw", stride=stride, padding=1, groups=ci)
        self.b1, self.r1 = nn.BatchNorm2d(ci), _relu(w.reads(f"{b}.pw"))
        self.pw, self.b2, self.r2 = _conv(ci, co, 1, w, f"{b}.pw"), nn.BatchNorm2d(co), _relu(out_bits)

    def forward(self, x):
        return self.r2(self.b2(self.pw(self.r1(self.b1(self.dw(x))))))


class _Head(nn.Module):
    """Global average pool, flatten, dense layer."""

    def __init__(self, c, classes, w: _Widths):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = _linear(c, classes, w, "head.fc")

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


class SeparableNet(GraphNet):
    """A stem conv (BatchNorm, ReLU quantizer), depthwise-separable blocks ``blocks.i``, a head:
    MobileNetV1 and DS-CNN."""

    def __init__(self, name: str, plan: BitPlan, stem: dict, blocks: list, classes: int, in_channels: int,
                 input_bits=None, signed_input=True, weight_scale="mse"):
        super().__init__()
        self.layer_names = GRAPH_ARCHS[name]
        self.plan, w = plan, _Widths(plan, weight_scale)
        c0 = stem["out"]
        self.inq = _input(input_bits or w.reads("stem"), signed_input)
        self.stem = _conv(in_channels, c0, stem["k"], w, "stem", stride=stem["stride"], padding=stem["pad"])
        self.bn, self.r = nn.BatchNorm2d(c0), _relu(w.reads("blocks.0.dw"))
        mods, ci = [], c0
        for i, (co, stride) in enumerate(blocks):
            nxt = f"blocks.{i + 1}.dw" if i + 1 < len(blocks) else "head.fc"
            mods.append(_Separable(ci, co, stride, w, f"blocks.{i}", w.reads(nxt)))
            ci = co
        self.blocks = nn.ModuleList(mods)
        self.head = _Head(ci, classes, w)

    def forward(self, x):
        x = self.r(self.bn(self.stem(self.inq(x))))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def mobilenet_v1(plan: BitPlan, classes=2, alpha=0.25, in_channels=3, **kw) -> SeparableNet:
    c = lambda n: max(8, int(n * alpha))  # noqa: E731
    # (output channels, stride) of the thirteen depthwise-separable blocks
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    return SeparableNet("mobilenet_v1", plan, {"out": c(32), "k": 3, "stride": 2, "pad": 1},
                        [(c(co), stride) for co, stride in blocks], classes, in_channels, **kw)


def ds_cnn(plan: BitPlan, classes=12, in_channels=1, **kw) -> SeparableNet:
    return SeparableNet("ds_cnn", plan, {"out": 64, "k": (10, 4), "stride": 2, "pad": (5, 1)}, [(64, 1)] * 4,
                        classes, in_channels, **kw)


def ad_autoencoder(wb=8, ab=8) -> nn.Module:
    """flipq's own dense family (``flipq.quant.models.QuantNet``): float biases, BatchNorm and a
    ReLU quantizer after each hidden layer, a float output."""
    from flipq.host.bitplan import LayerBits
    from flipq.quant.archs import mac_names
    from flipq.quant.models import QuantNet

    hidden = {"bias": "float", "bn": True}
    arch = tuple(("fc", units, hidden) for units in (128, 128, 128, 128, 8, 128, 128, 128, 128)) + \
        (("fc", 640, {"bias": "float"}),)
    plan = BitPlan(tuple(LayerBits(name, wb, ab) for name in mac_names(arch)))
    return QuantNet(arch, (640,), plan, num_classes=640, signed_input=True)


def build_graph_arch(name: str, input_shape, plan: BitPlan, num_classes: int, signed_input: bool = False,
                     weight_scale: str = "mse") -> GraphNet:
    """The graph architecture ``name`` (:data:`flipq.quant.archs.GRAPH_ARCHS`) for ``flipq
    train``: widths from ``plan`` (keyed by module path), the input quantizer as wide as the
    first layer's ``act_bits``, the stem taking ``input_shape``'s channels."""
    plan.check_names(list(GRAPH_ARCHS[name]))
    kw = dict(classes=num_classes, in_channels=int(input_shape[0]), signed_input=signed_input,
              weight_scale=weight_scale)
    if name == "resnet8":
        return ResNet8(plan, **kw)
    return {"ds_cnn": ds_cnn, "mobilenet_v1": mobilenet_v1}[name](plan, **kw)


def build(name: str, weight_bits: int = 4, act_bits: int = 4, seed: int = 0, input_shape: tuple | None = None) -> nn.Module:
    """One of :data:`MODELS`, ``weight_bits``/``act_bits`` everywhere and an 8-bit signed input
    quantizer, with seeded random parameters and scales calibrated on inputs of ``input_shape``
    (default: the model's own; the convolutional ones take any size, ending in a global pool), in
    eval mode."""
    if name not in MODELS:
        raise ValueError(f"unknown MLPerf Tiny model '{name}' (known: {', '.join(MODELS)})")
    torch.manual_seed(seed)
    shape, classes, _ = MODELS[name]
    shape = tuple(input_shape) if input_shape is not None else shape
    if name == "ad_autoencoder":
        net = ad_autoencoder(weight_bits, act_bits)
    else:
        plan = BitPlan.uniform(GRAPH_ARCHS[name], weight_bits, act_bits)
        kw = dict(classes=classes, in_channels=shape[0], input_bits=8, signed_input=True, weight_scale="absmax")
        net = ResNet8(plan, **kw) if name == "resnet8" else {"ds_cnn": ds_cnn, "mobilenet_v1": mobilenet_v1}[name](
            plan, **kw)
    return randomize(net, shape, seed)


def randomize(net: nn.Module, shape: tuple, seed: int = 0, batches: int = 4) -> nn.Module:
    """Seeded BatchNorm statistics and affine parameters, then the activation quantizers'
    scales calibrated on random inputs (Brevitas ``calibration_mode``); eval mode."""
    from brevitas.graph.calibrate import calibration_mode

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.4)
                m.eval()
        with calibration_mode(net):
            for _ in range(batches):
                net(torch.randn(16, *shape, generator=g))
    return net.eval()
