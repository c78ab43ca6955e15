"""Any network ``flipq train --arch`` names, built on its BitPlan: the layer-token families
(:class:`flipq.quant.models.QuantNet`) and the graph networks (:mod:`flipq.quant.mlperf`).

    >>> net = build_network("resnet8", (1, 28, 28), default_plan("resnet8"), 10)   # doctest: +SKIP
"""

from __future__ import annotations

from flipq.host.bitplan import BitPlan
from flipq.quant.archs import is_graph_arch


def build_network(arch_name: str, input_shape, plan: BitPlan, num_classes: int, signed_input: bool = False,
                  weight_scale: str = "mse"):
    """The quantized network of ``arch_name``; anything with ``mac_layers()`` keyed by plan name."""
    if is_graph_arch(arch_name):
        from flipq.quant.mlperf import build_graph_arch

        return build_graph_arch(arch_name, input_shape, plan, num_classes, signed_input, weight_scale)
    from flipq.quant.models import build_model

    return build_model(arch_name, input_shape, plan, num_classes, signed_input, weight_scale)


def check_trainable_options(arch_name: str, *, flip: bool, float_epochs: int, weight_scale: str) -> None:
    """Refuse, before anything is written, what an architecture's family cannot train with; a
    token family is checked as before (weight-scale rule, flip's power-of-two weights)."""
    if not is_graph_arch(arch_name):
        from flipq.quant.archs import get_arch
        from flipq.quant.scalerules import check_rule_applies

        check_rule_applies(weight_scale, get_arch(arch_name), arch_name)
        if flip:
            from flipq.quant.flipconfig import check_flip_arch

            check_flip_arch(get_arch(arch_name), arch_name)
        return
    if float_epochs:
        raise ValueError(f"architecture '{arch_name}': --float-epochs trains a float twin built from layer tokens; "
                         "a graph network trains quantized from the start (drop --float-epochs)")
