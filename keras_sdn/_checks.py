"""Argument checks shared across the package.

Each check raises a `ValueError` in Keras' style, "Expected `name` to be ...
Received: name=value", and returns the value as a plain Python object (NumPy
integers become `int`), so that it serializes like one. Bools are never
accepted as numbers.
"""

import math
import numbers

import numpy as np
from keras import ops


def check_int(name, value, low, high=None):
    """Returns `value` as an int; raises unless it is an integer in `[low, high]`.

    `high=None`: no upper bound. NumPy integers are accepted, bools are not.
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        expected = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise ValueError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")
    return int(value)


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """Returns `value` as a float; raises unless it is a real number in the interval.

    The interval runs from `low` to `high` (`None`: unbounded on that side),
    each end excluded if `low_open` / `high_open`. NaN is never accepted,
    nor are bools.
    """
    in_range = (
        is_real(value)
        and not math.isnan(value)
        and (low is None or (value > low if low_open else value >= low))
        and (high is None or (value < high if high_open else value <= high))
    )
    if not in_range:
        raise ValueError(
            f"Expected `{name}` to be {_interval(low, high, low_open, high_open)}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_temperature(temperature, name="temperature"):
    """Returns a number `temperature` as a float; raises unless it is finite and > 0.

    Tensors and arrays pass unchecked (their value may not be known yet).
    """
    if not isinstance(temperature, (numbers.Number, np.bool_)) and hasattr(temperature, "shape"):
        return temperature
    if not (is_real(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"Expected `{name}` to be a finite number > 0. Received: {name}={temperature!r}"
        )
    return float(temperature)


def check_bool(name, value, allow_none=False):
    """Returns `value` as a bool (or None if allowed); raises for anything else (0 and 1 too)."""
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        expected = "None, True or False" if allow_none else "True or False"
        raise ValueError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")
    return bool(value)


def check_choice(name, value, choices):
    """Returns `value`; raises unless it is one of `choices` (compared with `==`)."""
    if isinstance(value, (str, numbers.Number, type(None))) and value in choices:
        return value
    raise ValueError(f"Expected `{name}` to be one of {tuple(choices)}. Received: {name}={value!r}")


def check_ordered(low_name, low, high_name, high):
    """Raises unless `low <= high` (two arguments that bound a range)."""
    if low > high:
        raise ValueError(
            f"Expected `{low_name}` <= `{high_name}`. "
            f"Received: {low_name}={low!r}, {high_name}={high!r}"
        )


def check_image_shape(name, value):
    """Returns `value` as a tuple `(height, width, channels)` of ints >= 1; raises otherwise."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(
            f"Expected `{name}` to be (height, width, channels). Received: {name}={value!r}"
        )
    return tuple(
        check_int(f"{name} {axis}", size, 1)
        for axis, size in zip(("height", "width", "channels"), value)
    )


def check_permutation(name, value, items):
    """Returns `value` as a tuple; raises unless it holds each of `items` once."""
    if not isinstance(value, (list, tuple)) or sorted(value, key=str) != sorted(items, key=str):
        raise ValueError(
            f"Expected `{name}` to be an ordering of {tuple(items)}. Received: {name}={value!r}"
        )
    return tuple(value)


def check_images(name, images, image_shape, batched=True):
    """Returns `images` as a tensor; raises unless shaped `(batch,) + image_shape` (or
    `image_shape` with `batched=False`)."""
    images = ops.convert_to_tensor(images)
    expected = ((None,) if batched else ()) + tuple(image_shape)
    shape = tuple(images.shape)
    if len(shape) != len(expected) or shape[-3:] != tuple(image_shape):
        raise ValueError(f"Expected `{name}` of shape {expected}. Received: shape={shape}")
    return images


def is_real(value):
    """Whether `value` is a real number (Python or NumPy), a bool excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _interval(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"a number {'<' if high_open else '<='} {high}"
    return "a number"
