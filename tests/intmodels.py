"""Random integer models straight from the integer model's vocabulary (no Brevitas, no QONNX):
conv (any kernel, stride, asymmetric padding), dense, requant (signed/unsigned, narrow, ReLU,
shifts both ways), threshold (ascending and descending channels), ReLU, max pool (overlapping
windows too), flatten; weights of 2..8 bits with groups whose high planes are zero, all-zero
columns, biases or none; and a random folding. What the RTL twin and the emulator must agree on.

>>> model, pe, simd = random_intmodel(np.random.default_rng(3))
"""

from __future__ import annotations

import numpy as np

from flipq.host.intmodel import IntLayer, IntModel, QuantSpec


def _quant(rng, signed=None) -> QuantSpec:
    bits = int(rng.integers(2, 9))
    signed = bool(rng.integers(0, 2)) if signed is None else signed
    return QuantSpec(bits, signed, bool(signed and rng.integers(0, 2)), int(rng.integers(-4, 2)))


def _weights(rng, k: int, n: int, bits: int, group: int) -> np.ndarray:
    """(k, n) weights on a narrow ``bits``-bit grid; per (group, column) a random narrower width
    (its low planes zero), some columns all zero."""
    g = k if group <= 0 or group > k else group
    qmax = 2 ** (bits - 1) - 1
    w = np.zeros((k, n), dtype=np.int64)
    for col in range(n):
        if rng.random() < 0.1:
            continue  # an all-zero column
        for start in range(0, k, g):
            d = int(rng.integers(0, max(bits - 1, 1)))  # planes below d are zero in this group
            lo, hi = -(qmax >> d), qmax >> d
            w[start:start + g, col] = rng.integers(lo, hi + 1, size=min(g, k - start)) << d
    return w


def _acc_bound(w: np.ndarray, amax: int, bias) -> int:
    b = 0 if bias is None else int(np.abs(bias).max(initial=0))
    return int(np.abs(w).sum(axis=0).max(initial=0)) * amax + b


def random_intmodel(rng, *, max_layers: int = 3) -> tuple[IntModel, dict, dict]:
    """(model, pe, simd): a random integer model and a random folding of its MAC layers."""
    from flipq.hls.fold import pe_options, simd_options

    conv_first = rng.random() < 0.7
    iq = _quant(rng)
    if conv_first:
        shape = (int(rng.integers(3, 8)), int(rng.integers(3, 8)), int(rng.integers(1, 5)))
    else:
        shape = (int(rng.integers(2, 40)),)
    in_shape = shape
    layers: list[IntLayer] = []
    amax = max(abs(iq.qmin), abs(iq.qmax))
    exp = iq.exp
    pe, simd = {}, {}
    n_mac = int(rng.integers(1, max_layers + 1))
    for m in range(n_mac):
        name = f"mac{m}"
        bits = int(rng.integers(2, 9))
        group = int(rng.choice([0, 1, 3, 4, 8]))
        w_exp = int(rng.integers(-3, 1))
        if len(shape) == 3 and rng.random() < 0.8:
            h, w_, c = shape
            kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w_, 3) + 1))
            sy, sx = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)),
                    int(rng.integers(0, kw))]
            oh, ow = (h + pads[0] + pads[2] - kh) // sy + 1, (w_ + pads[1] + pads[3] - kw) // sx + 1
            cout = int(rng.integers(1, 9))
            k = kh * kw * c
            wk = _weights(rng, k, cout, bits, group)
            bias = rng.integers(-amax * 4, amax * 4 + 1, size=cout) if rng.random() < 0.6 else None
            layers.append(IntLayer("conv", name, {"weight_bits": bits, "w_exp": w_exp, "stride": [sy, sx],
                                                  "pads": pads, "out_shape": [oh, ow, cout], "group_size": group},
                                   weight=wk.reshape(kh, kw, c, cout), bias=bias))
            shape = (oh, ow, cout)
            geo_cin, geo_kw = c, kw
        else:
            if len(shape) == 3:
                layers.append(IntLayer("flatten", f"flat{m}", {"out_shape": [int(np.prod(shape))]}))
                beat = shape[-1]
                shape = (int(np.prod(shape)),)
            else:
                beat = shape[0]
            k, n = shape[0], int(rng.integers(1, 12))
            wk = _weights(rng, k, n, bits, group)
            bias = rng.integers(-amax * 4, amax * 4 + 1, size=n) if rng.random() < 0.6 else None
            layers.append(IntLayer("dense", name, {"weight_bits": bits, "w_exp": w_exp, "out_shape": [n],
                                                   "group_size": group}, weight=wk, bias=bias))
            shape = (n,)
            geo_cin, geo_kw = beat, None
        fan_in, n_out = wk.shape
        g = fan_in if group <= 0 or group > fan_in else group
        options = simd_options(fan_in, g, geo_cin, geo_kw)
        simd[name] = int(rng.choice(options))
        pe[name] = int(rng.choice(pe_options(n_out)))
        acc = _acc_bound(wk, amax, bias)
        exp += w_exp
        last = m == n_mac - 1
        # what follows the MAC: a requantizer (ReLU or not), thresholds, a ReLU, or nothing
        tail = str(rng.choice(["requant", "threshold", "relu_requant", "none"]))
        if tail == "none" and acc >= 2**20:  # keep every stream, the output's too, within 32 bits
            tail = "requant"
        if tail in ("requant", "relu_requant"):
            q = _quant(rng)
            # put the quantizer's grid near the accumulator's range so values do not all clip
            top = max(acc, 1).bit_length()
            q = QuantSpec(q.bits, q.signed, q.narrow, exp + top - q.bits + int(rng.integers(-2, 2)))
            if tail == "relu_requant":
                layers.append(IntLayer("relu", f"relu{m}", {"out_shape": list(shape)}))
            layers.append(IntLayer("requant", f"q{m}", {"quant": q.to_dict(), "relu": bool(rng.integers(0, 2)),
                                                        "out_shape": list(shape)}))
            amax, exp = max(abs(q.qmin), abs(q.qmax)), q.exp
        elif tail == "threshold":
            q = _quant(rng)
            levels = q.qmax - q.qmin
            c = shape[-1]
            t = np.sort(rng.integers(-acc - 2, acc + 3, size=(c, levels)), axis=1)
            desc = [int(i) for i in np.flatnonzero(rng.random(c) < 0.3)]
            layers.append(IntLayer("threshold", f"t{m}", {"quant": q.to_dict(), "descending": desc,
                                                          "out_shape": list(shape)}, thresholds=t))
            amax, exp = max(abs(q.qmin), abs(q.qmax)), q.exp
        else:
            amax = acc
        if not last and len(shape) == 3 and rng.random() < 0.4:
            h, w_, c = shape
            kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w_, 3) + 1))
            sy, sx = int(rng.integers(1, kh + 1)), int(rng.integers(1, kw + 1))
            oh, ow = (h - kh) // sy + 1, (w_ - kw) // sx + 1
            layers.append(IntLayer("maxpool", f"pool{m}", {"kernel": [kh, kw], "stride": [sy, sx],
                                                           "out_shape": [oh, ow, c]}))
            shape = (oh, ow, c)
    if len(shape) == 3:  # end on a vector, as a classifier does
        layers.append(IntLayer("flatten", "flat_end", {"out_shape": [int(np.prod(shape))]}))
    model = IntModel(input_shape=tuple(int(d) for d in in_shape), input_quant=iq, layers=layers, output_exp=exp,
                     input_layout="NHWC")
    return model, pe, simd
