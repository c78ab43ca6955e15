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
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

# name -> (input shape without batch, classes / outputs, the task MLPerf Tiny runs it on)
MODELS = {
    "resnet8": ((3, 32, 32), 10, "image classification (CIFAR-10)"),
    "mobilenet_v1": ((3, 96, 96), 2, "visual wake words, width 0.25"),
    "ds_cnn": ((1, 49, 10), 12, "keyword spotting"),
    "ad_autoencoder": ((640,), 640, "anomaly detection"),
}


def _conv(ci, co, k, bits, *, stride=1, padding=0, groups=1):
    return qnn.QuantConv2d(ci, co, k, stride=stride, padding=padding, groups=groups, bias=False,
                           weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=bits)


def _relu(bits, quant_tensor=False):
    return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=quant_tensor)


def _signed(bits, quant_tensor=False):
    return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=quant_tensor)


def _input():
    return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True)


class _Basic(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN, the shortcut (the input, or a 1x1 projection),
    their sum, ReLU. The branch's end and the projection are quantized (signed, power of two) so
    the sum is exact; plain tensors are added (Brevitas adds quant tensors of one scale only)."""

    def __init__(self, ci, co, stride, wb, ab):
        super().__init__()
        self.c1, self.b1, self.r1 = _conv(ci, co, 3, wb, stride=stride, padding=1), nn.BatchNorm2d(co), _relu(ab)
        self.c2, self.b2, self.q2 = _conv(co, co, 3, wb, padding=1), nn.BatchNorm2d(co), _signed(ab + 1)
        self.proj = None
        if stride != 1 or ci != co:
            self.proj, self.qp = _conv(ci, co, 1, wb, stride=stride), _signed(ab + 1)
        self.out = _relu(ab)

    def forward(self, x):
        y = self.q2(self.b2(self.c2(self.r1(self.b1(self.c1(x))))))
        s = self.qp(self.proj(x)) if self.proj is not None else getattr(x, "value", x)
        return self.out(y + s)


class ResNet8(nn.Module):
    def __init__(self, wb=4, ab=4, classes=10):
        super().__init__()
        self.inq = _input()
        self.stem, self.bn, self.r = _conv(3, 16, 3, wb, padding=1), nn.BatchNorm2d(16), _relu(ab)
        self.s1, self.s2, self.s3 = _Basic(16, 16, 1, wb, ab), _Basic(16, 32, 2, wb, ab), _Basic(32, 64, 2, wb, ab)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), qnn.QuantLinear(64, classes, bias=False,
                                                                    weight_quant=Int8WeightPerTensorFixedPoint,
                                                                    weight_bit_width=wb)

    def forward(self, x):
        x = self.r(self.bn(self.stem(self.inq(x))))
        return self.fc(torch.flatten(self.pool(self.s3(self.s2(self.s1(x)))), 1))


def _separable(ci, co, stride, wb, ab):
    """Depthwise 3x3 (BatchNorm, ReLU quantizer), pointwise 1x1 (BatchNorm, ReLU quantizer)."""
    return [_conv(ci, ci, 3, wb, stride=stride, padding=1, groups=ci), nn.BatchNorm2d(ci), _relu(ab),
            _conv(ci, co, 1, wb), nn.BatchNorm2d(co), _relu(ab)]


class _Head(nn.Module):
    """Global average pool, flatten, dense layer."""

    def __init__(self, c, classes, wb):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = qnn.QuantLinear(c, classes, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                  weight_bit_width=wb)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


def mobilenet_v1(wb=4, ab=4, classes=2, alpha=0.25) -> nn.Module:
    c = lambda n: max(8, int(n * alpha))  # noqa: E731
    # (output channels, stride) of the thirteen depthwise-separable blocks
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers = [_input(), _conv(3, c(32), 3, wb, stride=2, padding=1), nn.BatchNorm2d(c(32)), _relu(ab)]
    ci = c(32)
    for co, stride in blocks:
        layers += _separable(ci, c(co), stride, wb, ab)
        ci = c(co)
    return nn.Sequential(*layers, _Head(ci, classes, wb))


def ds_cnn(wb=4, ab=4, classes=12) -> nn.Module:
    layers = [_input(), _conv(1, 64, (10, 4), wb, stride=2, padding=(5, 1)), nn.BatchNorm2d(64), _relu(ab)]
    for _ in range(4):
        layers += _separable(64, 64, 1, wb, ab)
    return nn.Sequential(*layers, _Head(64, classes, wb))


def ad_autoencoder(wb=8, ab=8) -> nn.Module:
    """flipq's own dense family (``flipq.quant.models.QuantNet``): float biases, BatchNorm and a
    ReLU quantizer after each hidden layer, a float output."""
    from flipq.host.bitplan import BitPlan, LayerBits
    from flipq.quant.archs import mac_names
    from flipq.quant.models import QuantNet

    hidden = {"bias": "float", "bn": True}
    arch = tuple(("fc", units, hidden) for units in (128, 128, 128, 128, 8, 128, 128, 128, 128)) + \
        (("fc", 640, {"bias": "float"}),)
    plan = BitPlan(tuple(LayerBits(name, wb, ab) for name in mac_names(arch)))
    return QuantNet(arch, (640,), plan, num_classes=640, signed_input=True)


def build(name: str, weight_bits: int = 4, act_bits: int = 4, seed: int = 0, input_shape: tuple | None = None) -> nn.Module:
    """One of :data:`MODELS`, with seeded random parameters and scales calibrated on inputs of
    ``input_shape`` (default: the model's own; the convolutional ones take any size, ending in a
    global pool), in eval mode."""
    if name not in MODELS:
        raise ValueError(f"unknown MLPerf Tiny model '{name}' (known: {', '.join(MODELS)})")
    torch.manual_seed(seed)
    shape, classes, _ = MODELS[name]
    shape = tuple(input_shape) if input_shape is not None else shape
    net = {"resnet8": lambda: ResNet8(weight_bits, act_bits, classes),
           "mobilenet_v1": lambda: mobilenet_v1(weight_bits, act_bits, classes),
           "ds_cnn": lambda: ds_cnn(weight_bits, act_bits, classes),
           "ad_autoencoder": lambda: ad_autoencoder(weight_bits, act_bits)}[name]()
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
