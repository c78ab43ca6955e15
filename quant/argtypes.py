"""argparse ``type=`` checks for the training, search and export options: a bad value fails
inside argparse (usage line, exit status 2) before anything is loaded.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> _ = p.add_argument("--epochs", type=positive_int)
>>> p.parse_args(["--epochs", "3"]).epochs
3
"""

from __future__ import annotations

import argparse
import math


def int_at_least(low: int):
    """A ``type=`` callable accepting integers ``>= low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """A finite float ``> 0`` (a learning rate, a step)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
    return value
