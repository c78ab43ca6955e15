"""What follows a MAC layer up to its quantizer, lowered to integer thresholds or an output affine.

A MAC node's output runs through a chain of per-channel float operations (``Add``/``Sub``/
``Mul``/``Div`` with a constant, ``BatchNormalization``, ``Relu``, ``MaxPool``) to a ``Quant``
(an activation quantizer) or to the graph output. :func:`flipq.hls.lower.lower_qonnx` keeps the
power-of-two shift requantization where the chain is only a bias on the accumulator's grid and a
ReLU; every other chain becomes here

- a ``threshold`` layer (:mod:`flipq.hls.thresholds`) when it ends in a Quant: exact whatever
  the scales, BatchNorm or bias (MaxPool inside the chain is moved after it: max commutes with a
  non-decreasing step function), or
- the model's ``output_affine`` when it ends at the graph output: per-channel float ``scale``
  and ``bias`` composed in float64 from the chain's constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ELEMENTWISE = ("Add", "Sub", "Mul", "Div")
CHAIN_OPS = ELEMENTWISE + ("BatchNormalization", "Relu", "MaxPool")


@dataclass
class Chain:
    """The nodes after a MAC node: ``nodes`` in order, ending with ``quant`` (a Quant node) or at
    the graph output (``quant`` None and ``to_output``); ``stop`` is the node that ended the walk
    otherwise (something a chain cannot hold)."""

    nodes: list
    quant: object | None
    to_output: bool
    stop: object | None = None

    @property
    def ops(self) -> list[str]:
        return [n.op_type for n in self.nodes]


def is_constant(model, name: str) -> bool:
    if model.get_initializer(name) is not None:
        return True
    producer = model.find_producer(name)
    return producer is not None and producer.op_type == "Quant" and all(
        model.get_initializer(i) is not None for i in producer.input)


def walk_chain(model, mac_node) -> Chain:
    """Follow single consumers from ``mac_node`` through :data:`CHAIN_OPS` to a Quant or the
    graph output."""
    outputs = {o.name for o in model.graph.output}
    nodes = []
    cur = mac_node.output[0]
    while True:
        if cur in outputs:
            return Chain(nodes, None, True)
        users = model.find_consumers(cur) or []
        if len(users) != 1:
            return Chain(nodes, None, False, users[0] if users else None)
        node = users[0]
        # Trunc: TruncAvgPool's quantizer; BipolarQuant: FINN's 1-bit activations
        if node.op_type in ("Quant", "Trunc", "BipolarQuant") and node.input[0] == cur:
            return Chain(nodes + [node], node, False)
        if node.op_type in ELEMENTWISE:
            others = [i for i in node.input if i != cur]
            if len(others) != 1 or not is_constant(model, others[0]):
                return Chain(nodes, None, False, node)
        elif node.op_type not in CHAIN_OPS:
            return Chain(nodes, None, False, node)
        nodes.append(node)
        cur = node.output[0]


def channel_vector(value, c: int) -> np.ndarray | None:
    """A constant as one float64 per channel (channels last), or None if it is not per-tensor
    or per-channel."""
    v = np.asarray(value, dtype=np.float64)
    if v.size == 1:
        return np.full(c, float(v.ravel()[0]))
    if v.size == c and (v.ndim == 1 or max(v.shape) == c and v.shape[-1] == c):
        return v.reshape(c).copy()
    return None


def compose_affine(model, chain: Chain, start: str, scale: np.ndarray, const_value, where, bias=None) -> tuple:
    """``(scale, bias, relu)`` per channel of an affine chain (no MaxPool/Quant; a ReLU only
    last), in float64: ``y = acc * scale + bias`` (then ``max(y, 0)``) for the integer
    accumulator ``acc`` whose real value is ``acc * scale`` on entry."""
    from qonnx.util.basic import get_by_name

    c = len(scale)
    a, b = np.array(scale, dtype=np.float64), np.zeros(c)
    if bias is not None:  # the MAC node's own bias input
        b = channel_vector(bias, c)
    cur = start
    relu = False
    for node in chain.nodes:
        if relu:
            raise where(node, f"{node.op_type} after the output ReLU has no place in a float output affine")
        if node.op_type == "Relu":
            relu = True
        elif node.op_type == "BatchNormalization":
            gamma, beta, mean, var = (channel_vector(model.get_initializer(i), c) for i in node.input[1:5])
            eps_attr = get_by_name(node.attribute, "epsilon")
            eps = eps_attr.f if eps_attr is not None else 1e-5
            if any(v is None for v in (gamma, beta, mean, var)):
                raise where(node, "BatchNorm parameters must be constants, one per channel")
            k = gamma / np.sqrt(var + eps)
            a, b = a * k, (b - mean) * k + beta
        elif node.op_type in ELEMENTWISE:
            other = [i for i in node.input if i != cur][0]
            v = channel_vector(const_value(model, other), c)
            if v is None:
                raise where(node, "the constant must be per-tensor or per-channel")
            first = node.input[0] == cur
            if node.op_type == "Add":
                b = b + v
            elif node.op_type == "Sub":
                a, b = (a, b - v) if first else (-a, v - b)
            elif node.op_type == "Mul":
                a, b = a * v, b * v
            else:
                if not first:
                    raise where(node, "a division by the layer's output is not affine")
                a, b = a / v, b / v
        else:
            raise where(node, f"{node.op_type} after the last layer has no place in a float output affine "
                              "(end the model with the last layer, a BatchNorm or a scale)")
        cur = node.output[0]
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise where(chain.nodes[-1], "the output affine is not finite")
    return a, b, relu


def pow2_exponent(scale) -> int | None:
    """The exponent of a per-tensor power-of-two scale, else None."""
    v = np.asarray(scale, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(v == v[0]) or not v[0] > 0 or not math.isfinite(v[0]):
        return None
    e = math.log2(float(v[0]))
    return int(e) if e == round(e) else None
