"""Sampling and encoding ground-truth data for the disentanglement metrics."""

import numpy as np


def check_count(argument, value, minimum=1):
    """Raises a `ValueError` unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{argument}` must be an integer >= {minimum}, got {value!r}.")


def check_counts(**counts):
    """`check_count` for each keyword argument."""
    for argument, value in counts.items():
        check_count(argument, value)


def encode_factors(encode_fn, ground_truth, factors, batch_size):
    """Renders `factors` `(..., num_factors)` and encodes them in batches.

    Args:
        encode_fn: maps a batch of observations to latent means `(batch, d)`.
        ground_truth: a `keras_sdn.data.GroundTruthData`.
        factors: int array of shape `(..., num_factors)`.
        batch_size: observations rendered and encoded at once.

    Returns:
        float64 codes of shape `(..., d)`.
    """
    factors = np.asarray(factors)
    flat = factors.reshape(-1, factors.shape[-1])
    codes = []
    for start in range(0, len(flat), batch_size):
        batch = flat[start : start + batch_size]
        code = np.asarray(encode_fn(ground_truth.render(batch)), np.float64)
        if code.ndim != 2 or len(code) != len(batch):
            raise ValueError(
                f"`encode_fn` must map {len(batch)} observations to an array of shape "
                f"({len(batch)}, latent_dims), got shape {code.shape}."
            )
        codes.append(code)
    codes = np.concatenate(codes)
    return codes.reshape(factors.shape[:-1] + codes.shape[-1:])
