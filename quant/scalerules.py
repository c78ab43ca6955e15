"""The names of the weight-scale rules (``flipq.quant.scaling`` implements them). Standard
library only: the command line offers them without importing torch.

>>> check_rule("mse")
'mse'
"""

WEIGHT_SCALE_RULES = ("absmax", "mse")


def check_rule(rule: str) -> str:
    if rule not in WEIGHT_SCALE_RULES:
        raise ValueError(f"weight scale rule {rule!r} is not one of {WEIGHT_SCALE_RULES}")
    return rule
