"""The names of the weight-scale rules (``flipq.quant.scaling`` implements them). Standard
library only: the command line offers them without importing torch.

>>> check_rule("mse")
'mse'
"""

WEIGHT_SCALE_RULES = ("absmax", "mse")
DEFAULT_RULE = "mse"  # BuildConfig's and QuantNet's default


def check_rule(rule: str) -> str:
    if rule not in WEIGHT_SCALE_RULES:
        raise ValueError(f"weight scale rule {rule!r} is not one of {WEIGHT_SCALE_RULES}")
    return rule


def check_rule_applies(rule: str, arch, arch_name: str) -> None:
    """A rule picks power-of-two weight scales; asking for another than the default on an
    architecture whose layers all have float weight scales would change nothing, so it is refused.

    >>> from flipq.quant.archs import get_arch
    >>> try:
    ...     check_rule_applies("absmax", get_arch("digits-cnn-bn"), "digits-cnn-bn")
    ... except ValueError as e:
    ...     print(str(e).partition(" picks")[0])
    architecture 'digits-cnn-bn': --weight-scale absmax
    """
    from flipq.quant.archs import mac_options

    scales = {name: o["weight_scale"] for name, o in mac_options(arch).items()}
    if check_rule(rule) != DEFAULT_RULE and scales and "pow2" not in scales.values():
        first = next(iter(scales))
        raise ValueError(f"architecture '{arch_name}': --weight-scale {rule} picks power-of-two weight scales, "
                         f"but every layer of it has a float weight scale ({first}: {scales[first]}); "
                         "drop --weight-scale")
