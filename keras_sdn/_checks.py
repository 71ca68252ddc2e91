"""Argument checks shared across the package: each raises a `ValueError` that
names the argument and what was expected."""

import numpy as np


def check_int(name, value, low, high=None):
    """Raises unless `value` is an int in `[low, high]` (`high=None`: no upper bound)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        expected = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise ValueError(f"`{name}` must be {expected}; got {name}={value!r}.")
